"""Types every stage passes, Settings, errors, the text toolkit and the audience rule."""
