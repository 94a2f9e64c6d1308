"""What people look at: PNG grids, scatter plots and curves (Pillow alone), and progress bars or
lines for long local work. Beside core/, below everything that shows something."""
