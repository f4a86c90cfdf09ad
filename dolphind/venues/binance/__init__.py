"""The Binance USDT-M futures venue: a package split by job behind the ``BinanceVenue``
facade (venue.py says which module does what).

The public names are re-exported here lazily: importing one part (``lease`` alone, say) does
not load ccxt and aiohttp with the rest."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dolphind.venues.binance.account import VenueSetupError
    from dolphind.venues.binance.credentials import Credentials, CredentialsError, load_credentials
    from dolphind.venues.binance.reconcile import ForeignHoldings, reconcile_store
    from dolphind.venues.binance.rest import BinanceAPIError
    from dolphind.venues.binance.venue import BinanceVenue, VenueLoop
    from dolphind.venues.venue import VenueStartupError

_WHERE = {"VenueSetupError": "account", "Credentials": "credentials",
          "CredentialsError": "credentials", "load_credentials": "credentials",
          "ForeignHoldings": "reconcile", "reconcile_store": "reconcile",
          "BinanceAPIError": "rest", "BinanceVenue": "venue", "VenueLoop": "venue"}

__all__ = ["BinanceAPIError", "BinanceVenue", "Credentials", "CredentialsError",
           "ForeignHoldings", "VenueLoop", "VenueSetupError", "VenueStartupError",
           "load_credentials", "reconcile_store"]


def __getattr__(name: str) -> Any:
    if name == "VenueStartupError":
        from dolphind.venues.venue import VenueStartupError
        return VenueStartupError
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
