"""xview_localizer.sim"""
