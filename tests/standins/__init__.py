"""Stand-ins for services that other branches are building, used only by tests."""
