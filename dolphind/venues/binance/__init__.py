"""The Binance USDT-M futures venue: a package split by job behind the ``BinanceVenue``
facade (venue.py says which module does what)."""

from dolphind.venues.binance.account import VenueSetupError
from dolphind.venues.binance.credentials import Credentials, CredentialsError, load_credentials
from dolphind.venues.binance.reconcile import ForeignHoldings, reconcile_store
from dolphind.venues.binance.rest import BinanceAPIError
from dolphind.venues.binance.venue import BinanceVenue, VenueLoop
from dolphind.venues.venue import VenueStartupError

__all__ = ["BinanceAPIError", "BinanceVenue", "Credentials", "CredentialsError",
           "ForeignHoldings", "VenueLoop", "VenueSetupError", "VenueStartupError",
           "load_credentials", "reconcile_store"]
