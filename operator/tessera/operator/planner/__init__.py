"""The zone planner: when does a zone split, when do two zones merge, which zone
drains where. Pure and deterministic: the same inputs give the same plan, and
nothing outside the arguments is read or written.

Both runtimes (the kopf operator and the local process runner) call
:func:`.rules.plan` with the world's spec, the zones they observe and the
planner :class:`.model.Memory` they kept from the previous call, then carry out
the returned actions and keep the returned memory. :func:`.actions.advance` is
the layout a plan leads to.

The layout is a binary split tree kept in the zones themselves: a split gives
the parent the lower half of its rectangle and a new zone (``parent`` = the
split zone, ``split_depth`` = the new depth) the upper half, both one level
deeper. A zone merges only with the zone it was split from while both still sit
at its ``split_depth``, i.e. after every later split of either has been merged
back, so a merge always restores the parent's earlier rectangle and the zones
keep partitioning the world exactly. Instance zones stand outside that tree.

Modules: :mod:`.model` (what the planner reads and remembers), :mod:`.actions`
(what it decides), :mod:`.rules` (``plan``: the rules in order), :mod:`.layout`
(drains, initial layout, deletions, standby pool), :mod:`.autoscale` (split and
merge, one decision function per mode), :mod:`.instances` (instance zones),
:mod:`.geometry` (cuts, partition check, sibling pairs), :mod:`.draft` (the
plan being put together).
"""
