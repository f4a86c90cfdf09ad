"""What the sizing layers learn from closed trades (bible §6.4): wins per signal bucket (the
bucket boost) and the last five outcomes (the streak multiplier)."""

from __future__ import annotations

from collections import deque

from dolphind.alpha.views import PortfolioView


class TradeRecord:
    """Bucket win rates and the recent streak, fed from the portfolio's last closed trade."""

    def __init__(self) -> None:
        self.bucket_wins = [0, 0, 0, 0]
        self.bucket_trades = [0, 0, 0, 0]
        self.recent_wins: deque[bool] = deque(maxlen=5)
        self._entry_bucket: dict[int, int] = {}
        self._last_closed_seq = -1

    def entered(self, scan_number: int, bucket: int) -> None:
        """An entry was issued on ``scan_number`` in signal bucket ``bucket``."""
        self._entry_bucket[scan_number] = bucket

    def record_closed(self, portfolio: PortfolioView) -> None:
        """Count the trade the portfolio reports closed, once."""
        closed = portfolio.last_closed
        if closed is None or closed.seq <= self._last_closed_seq:
            return
        self._last_closed_seq = closed.seq
        win = closed.pnl_usdt > 0.0
        self.recent_wins.append(win)
        bucket = self._entry_bucket.pop(closed.entry_scan, None)
        if bucket is not None:
            self.bucket_trades[bucket] += 1
            self.bucket_wins[bucket] += int(win)
