"""xview_localizer.train"""
