//! A job's state, as `squeue`, `sacct` and `scontrol` report it, and the
//! Flyte phase it maps to.

use flyte_connector_sdk::{Error, Phase};

use crate::shell::string_repr;

/// A job's state as Slurm reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job_id: String,
    /// As reported: `RUNNING`, `CANCELLED by 1000`, `COMPLETED+`.
    pub state: String,
    /// `EXIT:SIGNAL`, where the tool reports one.
    pub exit_code: Option<String>,
    pub reason: Option<String>,
}

/// Whether a command's standard error says Slurm itself could not be
/// reached, rather than that it does not know the job.
pub fn unreachable(stderr: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "unable to contact",
        "connection timed out",
        "socket timed out",
        "slurmdbd",
        "no such file or directory",
        "protocol authentication error",
    ];
    let stderr = stderr.to_lowercase();
    MARKERS.iter().any(|marker| stderr.contains(marker))
}

fn optional(field: Option<&str>) -> Option<String> {
    field
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "None")
        .map(str::to_owned)
}

/// `squeue -h -o '%i|%T|%r'` output.
pub fn parse_squeue(output: &str) -> Vec<JobState> {
    output
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.trim().split('|').collect();
            (parts.len() >= 2).then(|| JobState {
                job_id: parts[0].trim().to_owned(),
                state: parts[1].trim().to_owned(),
                exit_code: None,
                reason: optional(parts.get(2).copied()),
            })
        })
        .collect()
}

/// `sacct -X -n -P --format=JobIDRaw,State,ExitCode,Reason` output; job
/// steps (`95.batch`) are skipped.
pub fn parse_sacct(output: &str) -> Vec<JobState> {
    output
        .lines()
        .filter_map(|line| {
            let parts: Vec<&str> = line.trim().split('|').collect();
            (parts.len() >= 2 && !parts[0].contains('.')).then(|| JobState {
                job_id: parts[0].trim().to_owned(),
                state: parts[1].trim().to_owned(),
                exit_code: parts
                    .get(2)
                    .map(|v| v.trim())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
                reason: optional(parts.get(3).copied()),
            })
        })
        .collect()
}

/// `scontrol show job ID --oneliner` output.
pub fn parse_scontrol(output: &str) -> Option<JobState> {
    let field = |name: &str| {
        output.split_whitespace().find_map(|token| {
            let (key, value) = token.split_once('=')?;
            (key == name).then_some(value)
        })
    };
    Some(JobState {
        job_id: field("JobId")?.to_owned(),
        state: field("JobState")?.to_owned(),
        exit_code: field("ExitCode").map(str::to_owned),
        reason: optional(field("Reason")),
    })
}

impl JobState {
    /// The state's first word, `+` stripped, upper case: `CANCELLED by
    /// 1000` → `CANCELLED`.
    pub fn base_state(&self) -> String {
        self.state
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches('+')
            .to_uppercase()
    }

    /// The Flyte phase of the state; a state Slurm does not document is an
    /// error naming it.
    pub fn phase(&self) -> Result<Phase, Error> {
        let base = self.base_state();
        Ok(match base.as_str() {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" | "SUSPENDED" | "STOPPED" => Phase::Queued,
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" | "RESIZING" => Phase::Running,
            "COMPLETED" => Phase::Succeeded,
            "PREEMPTED" => Phase::RetryableFailed,
            "CANCELLED" => Phase::Aborted,
            "FAILED" | "NODE_FAIL" | "OUT_OF_MEMORY" | "TIMEOUT" | "DEADLINE" | "BOOT_FAIL"
            | "SPECIAL_EXIT" | "REVOKED" => Phase::Failed,
            _ => {
                return Err(Error::failed(format!(
                    "Unrecognized Slurm job state {}. If this is a real Slurm state, it needs \
                     adding to the state map of the Slurm connector.",
                    string_repr(&base)
                )));
            }
        })
    }

    /// `Slurm job 95 is FAILED, exit code 1:0, reason: NonZeroExitCode`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("Slurm job {} is {}", self.job_id, self.state)];
        if let Some(exit) = self.exit_code.as_deref().filter(|e| *e != "0:0") {
            parts.push(format!("exit code {exit}"));
        }
        if let Some(reason) = &self.reason {
            parts.push(format!("reason: {reason}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tool_is_read() {
        assert_eq!(
            parse_squeue("95|PENDING|Priority\n\n96|RUNNING|None\n"),
            [
                JobState {
                    job_id: "95".into(),
                    state: "PENDING".into(),
                    exit_code: None,
                    reason: Some("Priority".into())
                },
                JobState {
                    job_id: "96".into(),
                    state: "RUNNING".into(),
                    exit_code: None,
                    reason: None
                }
            ]
        );
        let sacct = parse_sacct("95|FAILED|1:0|NonZeroExitCode\n95.batch|FAILED|1:0|\n");
        assert_eq!(sacct.len(), 1);
        assert_eq!(
            sacct[0].describe(),
            "Slurm job 95 is FAILED, exit code 1:0, reason: NonZeroExitCode"
        );
        let shown = parse_scontrol(
            "JobId=95 JobName=flyte-x UserId=root(0) JobState=CANCELLED Reason=None \
             ExitCode=0:15 RunTime=00:00:01",
        )
        .expect("scontrol");
        assert_eq!(
            shown.describe(),
            "Slurm job 95 is CANCELLED, exit code 0:15"
        );
        assert!(parse_scontrol("slurm_load_jobs error: Invalid job id specified").is_none());
    }

    #[test]
    fn states_map_to_phases() {
        let state = |s: &str| JobState {
            job_id: "1".into(),
            state: s.into(),
            exit_code: None,
            reason: None,
        };
        for (s, phase) in [
            ("PENDING", Phase::Queued),
            ("RUNNING", Phase::Running),
            ("COMPLETING", Phase::Running),
            ("COMPLETED", Phase::Succeeded),
            ("COMPLETED+", Phase::Succeeded),
            ("CANCELLED by 1000", Phase::Aborted),
            ("TIMEOUT", Phase::Failed),
            ("OUT_OF_MEMORY", Phase::Failed),
            ("PREEMPTED", Phase::RetryableFailed),
        ] {
            assert_eq!(state(s).phase().expect(s), phase, "{s}");
        }
        assert_eq!(
            state("weird").phase().expect_err("unknown").message(),
            "Unrecognized Slurm job state 'WEIRD'. If this is a real Slurm state, it needs \
             adding to the state map of the Slurm connector."
        );
    }

    #[test]
    fn only_markers_of_an_unreachable_controller_count() {
        assert!(unreachable(
            "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!unreachable(
            "slurm_load_jobs error: Invalid job id specified"
        ));
    }
}
