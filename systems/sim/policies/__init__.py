"""One module (or subpackage) per simulated system; each calls `systems.sim.registry.register`."""
