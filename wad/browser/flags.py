"""Chromium switches that cut a session's memory (`[whatsapp] memory_saving_flags`).

Measured on the simulator (docs/operations.md, "Memory"): without them a headless Chromium with
one WhatsApp Web page runs a GPU process, a network-service process, a spare renderer and, per
browser context, a renderer for the omnibox popup's WebUI that a headless page never shows.
With them:

- `--disable-gpu --in-process-gpu`: no GPU process (headless pages have nothing to composite on
  a GPU; software rendering stays in the browser process);
- `NetworkServiceInProcess2`: the network service runs in the browser process instead of its own
  utility process (a crash of it takes the browser with it: the session restarts, as after
  any browser crash);
- `SpareRendererForSitePerProcess`, `WebUIOmniboxPopup`, `WebUIOmniboxFullPopup`,
  `WebUIOmniboxAimPopup` disabled: no renderer kept warm for a next navigation, no renderer for
  the omnibox popup.

Playwright's driver (one node process per daemon, about 125 MiB) gets a V8 young generation of
2 MiB a semi-space instead of the default 16 (`DRIVER_NODE_OPTIONS`, through `NODE_OPTIONS`):
about 20 MiB less, and a driver that carries a few messages at a time loses nothing by it.

Chromium keeps only the last `--disable-features` and `--enable-features` switch, and
Playwright passes its own lists first, so ours repeat Playwright's (as of 1.65) before adding
to them; otherwise Playwright's choices would silently be undone.
"""

from __future__ import annotations

_PLAYWRIGHT_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
)
_PLAYWRIGHT_ENABLED = ("CDPScreenshotNewSurface", "SkipListAccountsWithoutGaiaCookies")

DISABLED_FEATURES = (
    "SpareRendererForSitePerProcess", "WebUIOmniboxPopup", "WebUIOmniboxFullPopup",
    "WebUIOmniboxAimPopup",
)
ENABLED_FEATURES = ("NetworkServiceInProcess2",)

MEMORY_FLAGS = (
    "--disable-gpu",
    "--in-process-gpu",
    "--disable-features=" + ",".join((*_PLAYWRIGHT_DISABLED, *DISABLED_FEATURES)),
    "--enable-features=" + ",".join((*_PLAYWRIGHT_ENABLED, *ENABLED_FEATURES)),
)


DRIVER_NODE_OPTIONS = ("--max-semi-space-size=2",)


def memory_flags(enabled: bool) -> tuple[str, ...]:
    """The memory-saving switches when ENABLED (the setting), else none."""
    return MEMORY_FLAGS if enabled else ()


def driver_node_options(enabled: bool) -> tuple[str, ...]:
    """Node's options for Playwright's driver when memory saving is ENABLED, else none."""
    return DRIVER_NODE_OPTIONS if enabled else ()
