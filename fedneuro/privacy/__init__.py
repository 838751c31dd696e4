"""Privacy layer: DP-SGD on Opacus, the site's durable privacy ledger, accounting."""
