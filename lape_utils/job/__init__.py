"""The main job and the cached stages it shares with the notebooks.

Kept apart from the library the notebooks teach: :mod:`lape_utils.job.stages` caches the
heavy steps (capture, perplexity matrix, steering) so that notebooks and ``lape run`` reuse
one another's results, :mod:`lape_utils.job.main` runs the whole pipeline and writes the
summary, :mod:`lape_utils.job.notebooks` executes the numbered notebooks.
"""

from .main import JobConfig, run_main_job

__all__ = ["JobConfig", "run_main_job"]
