"""M22 comms: incidents (and governor halts) to a chat webhook, off the trading loop's path."""

from dolphind_comms.plugin import VERSION as __version__
from dolphind_comms.plugin import CommsPlugin

__all__ = ["CommsPlugin", "__version__"]
