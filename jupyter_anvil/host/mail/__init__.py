"""Email: messages sent from server code and received into its handlers, and their records.

records.py     what the store keeps of each message (MailRecord), its boxes and statuses
store.py       MailStore: the records in the store, each change told to the live feed
reading.py     a stored message read for people (the admin API): headers, bodies, parts
"""
