"""`genie pipeline`: the whole GenieRedux study as one resumable plan of stages, ending in a report."""
