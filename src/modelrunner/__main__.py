from modelrunner.cli import main

raise SystemExit(main())
