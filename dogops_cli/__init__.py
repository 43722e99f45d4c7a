"""The entry points a person starts, at the top of the tree: `cli.py` (the `dogops` command) and
`demo.py` (`dogops demo`). They import the flows (and, below those, tasks and the `dogops`
library); nothing below imports them. `deployments/serve.py` (`make serve`) is the third entry
point, beside the deployments it serves.

(Named `dogops_cli`, not `entrypoints`: a top-level `entrypoints` module already exists on PyPI.)
"""
