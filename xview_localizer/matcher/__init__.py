"""xview_localizer.matcher"""
