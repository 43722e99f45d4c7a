"""`python -m dogops.local.endpoint_server`: run one endpoint (see the package docstring)."""

import sys

if __name__ == "__main__":
    # Guarded: spawned workers import this module again as `__mp_main__`.
    from dogops.local.endpoint_server.serving import main

    sys.exit(main())
