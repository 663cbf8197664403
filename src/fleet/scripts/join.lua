-- Opens the session, holding nothing (an existing one is kept as it is).
refresh()
return reply(0, 0)
