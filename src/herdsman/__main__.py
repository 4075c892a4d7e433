from herdsman.cli.main import main

raise SystemExit(main())
