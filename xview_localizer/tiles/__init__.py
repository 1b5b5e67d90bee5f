"""xview_localizer.tiles"""
