"""`genie pipeline`: the whole GenieRedux study as one resumable plan of tasks, ending in a report."""
