import gc

# Start-up (issue 22, start to first banner): importing the server creates tens of thousands of
# objects (~45 dataclasses, regexes, tables) and the cyclic collector would run many times over
# them for nothing; they live as long as the process. Collect nothing while importing, then move
# what is there out of the collector's way (gc.freeze) and let it run as usual on what comes next.
gc.disable()
from mailmodes.cli import main  # noqa: E402

gc.freeze()
gc.enable()

raise SystemExit(main())
