"""The reconciler: models.d/ in, running engine instances out.

changes.py   which manifest field needs what (in place, restart, re-pull); pure
desired.py   a folder's load result -> the desired state, and what is held; pure
plan.py      plan(desired, observed) -> actions; pure, no I/O, no logging
execute.py   the Reconciler: one worker per model applies its actions in order
triggers.py  file events, the periodic resync and SIGHUP -> one debounced pass
"""
