"""The control API's blueprints, one module per area; `wad.api.app` mounts them."""
