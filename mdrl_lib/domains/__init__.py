"""The domains (notebook ``00_toy_world``): importing the package registers every domain of
:data:`mdrl_lib.domains.base.DOMAIN_MODULES`."""
from mdrl_lib.domains.base import load_domains

load_domains()
