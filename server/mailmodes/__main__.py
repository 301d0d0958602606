from mailmodes.cli import main

raise SystemExit(main())
