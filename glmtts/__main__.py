from glmtts.cli import main

raise SystemExit(main(fast_exit=True))
