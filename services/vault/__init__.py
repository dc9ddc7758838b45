"""The vault: messages encrypted at rest, and their release when a switch fires."""
