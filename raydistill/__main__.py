from raydistill.cli import main

raise SystemExit(main())
