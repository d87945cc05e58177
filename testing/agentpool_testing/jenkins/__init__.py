"""A Jenkins-compatible controller for tests and the demo (``jenkins.war`` is not available).

``Controller`` serves the subset of Jenkins' HTTP API that agentpool and python-jenkins
use, answering as real Jenkins does; ``docs/jenkins-controller.md`` lists what it covers.
"""

from .auth import Account, Permission
from .config import freestyle_config, pipeline_config
from .controller import Controller
from .server import Faults

__all__ = ["Account", "Controller", "Faults", "Permission", "freestyle_config", "pipeline_config"]
