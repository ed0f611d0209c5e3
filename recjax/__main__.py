from recjax.cli import main

raise SystemExit(main())
