"""Live systems: adapters that reach or start real serving endpoints (`LiveSystem`s, see
harness/contracts/live.py), their options, and the registry the harness builds them from
(systems.live.registry). The live run itself is harness.live.run_live."""
