from glmtts.cli import main

raise SystemExit(main())
