"""The ServerApp: hypernetworks, embedding store and the strategies of every method."""
