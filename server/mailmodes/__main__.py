import gc

from mailmodes.startup import cached_dataclass_code

# Start-up (issue 22, start to first banner): importing the server creates tens of thousands of
# objects (~50 dataclasses, regexes, tables) and the cyclic collector would run many times over
# them for nothing; they live as long as the process. Collect nothing while importing, then move
# what is there out of the collector's way (gc.freeze) and let it run as usual on what comes next.
# The dataclasses' generated functions come compiled from a cache (startup.py).
gc.disable()
with cached_dataclass_code():
    from mailmodes.cli import main

gc.freeze()
gc.enable()

raise SystemExit(main())
