"""One router per resource; each route is a few lines over :mod:`reward_service.serve.scoring`."""
