from mailmodes.startup import main

raise SystemExit(main())
