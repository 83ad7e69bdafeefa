"""rlexp entry point in a checkout: `python run.py +experiment=NAME [overrides]` (add -m for sweeps).

The same app as the installed `rlexp-train` command (rlexp/app.py); configs live in rlexp/conf/.
"""

from rlexp.app import main

if __name__ == "__main__":
    main()
