"""The main job and the cached stages it shares with the notebooks.

Kept apart from the library the notebooks teach: :mod:`lape_utils.job.config` holds the
settings (:class:`JobConfig`, one field per ``lape run`` option, and the presets),
:mod:`lape_utils.job.stages` caches the heavy steps (capture, perplexity matrix,
threshold → effect, steering) so that notebooks and ``lape run`` reuse one another's
results, :mod:`lape_utils.job.main` runs the whole pipeline, :mod:`lape_utils.job.report`
writes its summary and :mod:`lape_utils.job.notebooks` executes the numbered notebooks.
"""

from .config import JobConfig
from .main import run_main_job

__all__ = ["JobConfig", "run_main_job"]
