from mcp_broker.cli import main

main()
