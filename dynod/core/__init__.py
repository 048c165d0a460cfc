"""Pure rules, no trio and no I/O: Procfile and .env parsers, formations, the restart
ladder, the dyno state table, Heroku's log line, config var rules."""
