"""Evidence a buyer accepts: members, their plots and the signed lot pack.

``geo`` reads plot outlines from hostile files (GeoJSON, KML, the zipped shapefiles of
Brazil's rural registry, CAR) into validated WGS84 geometry; ``store`` keeps members,
plots, the lots' members and every manifest issued (SQLite); ``pack`` writes and checks
a lot's pack (GeoJSON of the plots, the lot's CSV and PDF report, a signed manifest).
"""
