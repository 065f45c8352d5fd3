"""Google Cloud Vertex AI jobs: the job spec files, the package, `improve-nas submit` and `improve-nas jobs`.

    machines.py     which accelerators each machine type takes
    spec.py         load_job_spec: read and check config.yaml / config_test.yaml
    train_flags.py  the trainer's flags, parsed and resolved into a Config on the submitting machine
    package.py      the sdist a job installs, named by a hash of its sources
    vertex.py       talk to Vertex AI: gcloud, else the REST API (one place for auth and error lines)
    submit.py       plan_job / submit: the whole command
    jobs.py         improve-nas jobs list|describe|logs|cancel, and following a job for submit --wait

Run-directory storage on gs:// lives in `improve_nas.storage.gcs`.
"""

from __future__ import annotations

from improve_nas import extras

extras.require("cloud", purpose="improve-nas submit")  # before the submodules, whose imports of them are deferred

from improve_nas.cloud.spec import TRAINER_MODULE, load_job_spec, validate_job_spec
from improve_nas.cloud.submit import JobPlan, Submission, SubmitRequest, plan_job, render_dry_run, submit

__all__ = ["TRAINER_MODULE", "JobPlan", "SubmitRequest", "Submission", "load_job_spec", "plan_job",
           "render_dry_run", "submit", "validate_job_spec"]
