"""The probers: one module per protocol, one signature, dispatched by name.

    async def probe(target: HostPort, module: Module, deadline: Deadline, resolver: Resolver) -> ProbeResult

``deadline`` is in ``loop.time()`` terms. A probe never raises for a network failure.
"""
