"""Operations on an environment's database as a whole (``releaser db ...``).

``releaser.db.refresh``: a complete, independent copy of one environment's
database into an earlier one's (staging refreshed from production).
"""
