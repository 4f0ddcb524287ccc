"""`wad`'s command line: `main` (the parser, `wad run`, `wad db migrate`, `wad demo`, `wad sim`),
the control commands over the control socket (`control`, `send`, `imports`)."""
