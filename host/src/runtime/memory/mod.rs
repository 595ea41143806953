//! Memory: what the process may use (`pod_limit`: its cgroup's limit, else
//! the machine's) and the budget all calls in flight share (`budget`), with
//! each instance's charge against it.

mod budget;
mod pod_limit;

pub(super) use self::{
    budget::{
        BudgetError, BudgetGauges, Charge, InstanceMemory, MemoryBudget, MemoryEstimate, OverCap,
    },
    pod_limit::current as current_limit,
};
pub use self::{
    budget::{BudgetSize, DEFAULT_BUDGET_PERCENT},
    pod_limit::{LimitSource, MemoryLimit},
};
