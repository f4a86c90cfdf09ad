"""M19 scheduler: rules on KPIs decide when to recalibrate the ACB threshold, halt or resume."""

from dolphind_scheduler.plugin import VERSION as __version__
from dolphind_scheduler.plugin import SchedulerPlugin

__all__ = ["SchedulerPlugin", "__version__"]
