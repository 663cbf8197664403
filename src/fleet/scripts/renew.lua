-- Keeps the session alive; a session that is gone is never recreated here.
if not alive then return reply(1, 0) end
refresh()
return reply(0, 0)
