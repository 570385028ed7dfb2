"""The browser play page (`robo-genie play ui=true`): session.py holds the rollout, app.py the web API."""
