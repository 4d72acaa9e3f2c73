"""Email: messages sent from server code and received into its handlers, and their records.

records.py     what the store keeps of each message (MailRecord), its boxes and statuses
store.py       MailStore: the records in the store, each change told to the live feed
reading.py     a stored message read for people (the admin API): headers, bodies, parts

receiving (an SMTP server for the apps' @email.handle_message):
inbound.py     MailServer: aiosmtpd on the server's loop; RCPT routed, DATA stored, then handled
routing.py     MailRouter: which app takes mail for a recipient
dkim_check.py  check_dkim: the DKIM verdict on a received message (dkimpy)
handling.py    MailHandling: an app's handler run on its kernel; its outcome as an SMTP reply
"""
