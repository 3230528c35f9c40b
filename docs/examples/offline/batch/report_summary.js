ARPO.summary = {"total":4,"running":0,"interrupted":false,"generated":"2026-11-29 23:00:55 UTC"};
