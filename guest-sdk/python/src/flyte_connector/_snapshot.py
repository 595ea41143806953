"""The last module a build imports (`build.app_module`): everything the
connector loaded is now in the interpreter's snapshot. Freezing it keeps the
garbage collector from walking (and so writing to) every one of those
objects in each call, which would dirty pages a fresh instance must then
copy."""

import gc

gc.collect()
gc.freeze()
