"""The mcp-broker benchmark: ``python -m bench`` (see ``python -m bench --help``).

It spawns real ``python -m mcp_broker`` processes over stdio, as MCP hosts do, and measures each
figure of issue 4 beside its baseline in the same run: latency, throughput, store, scale,
broadcast and cost. One module per section; ``client`` is the lean stdio MCP client they share.
"""
